// event-catalog in JavaScript, as a rudder-transformer user writes it (the peer of
// Bench/lookup-project/transformations/event-catalog.lua): rename after a 2,000-entry tracking plan,
// drop what the plan does not know.
const CATALOG = {
  'Order Completed': { name: 'order_completed', category: 'ecommerce' },
  'Product Viewed': { name: 'product_viewed', category: 'ecommerce' },
  'Checkout Started': { name: 'checkout_started', category: 'ecommerce' },
  'Signed Up': { name: 'signed_up', category: 'lifecycle' },
};
for (let i = 1; i <= 1996; i++) {
  const n = String(i).padStart(4, '0');
  CATALOG['Legacy Event ' + n] = { name: 'legacy_event_' + n, category: 'legacy' };
}
function transformEvent(event, metadata) {
  const entry = Object.prototype.hasOwnProperty.call(CATALOG, event.event) ? CATALOG[event.event] : undefined;
  if (!entry) return null;
  event.event = entry.name;
  if (event.properties && typeof event.properties === 'object' && !Array.isArray(event.properties)) {
    event.properties.category = entry.category;
  }
  return event;
}

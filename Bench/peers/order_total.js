// order-total in JavaScript, as a rudder-transformer user writes it (the peer of
// Bench/peer-project/transformations/order-total.lua): sum the products into a total and an item
// count. Lua's `math.floor(x * 100 + 0.5) / 100` and Math.round agree for the positive totals here.
function transformEvent(event, metadata) {
  const properties = event.properties;
  if (!properties || typeof properties !== 'object' || !Array.isArray(properties.products)) return event;
  let total = 0, count = 0;
  for (const p of properties.products) {
    if (typeof p.price === 'number' && Number.isInteger(p.quantity)) {
      total += p.price * p.quantity;
      count += p.quantity;
    }
  }
  properties.total = Math.floor(total * 100 + 0.5) / 100;
  properties.item_count = count;
  return event;
}

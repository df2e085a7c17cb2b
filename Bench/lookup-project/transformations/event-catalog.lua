-- event-catalog: renames tracked events after a tracking plan of 2,000 entries and drops the
-- events the plan does not know. The plan is a lookup table built once by the top level and
-- kept between events (the performance issue's lookup-table case: a table this size must not
-- cost every event a walk or a rebuild). Bench/peers/event_catalog.js is the same in JavaScript.

local CATALOG = {
  ["Order Completed"] = { name = "order_completed", category = "ecommerce" },
  ["Product Viewed"] = { name = "product_viewed", category = "ecommerce" },
  ["Checkout Started"] = { name = "checkout_started", category = "ecommerce" },
  ["Signed Up"] = { name = "signed_up", category = "lifecycle" },
}
for i = 1, 1996 do
  CATALOG[string.format("Legacy Event %04d", i)] = { name = string.format("legacy_event_%04d", i), category = "legacy" }
end

function transformEvent(event, metadata)
  local entry = CATALOG[event.event]
  if not entry then
    return nil   -- not in the plan
  end
  event.event = entry.name
  if type(event.properties) == "table" then
    event.properties.category = entry.category
  end
  return event
end

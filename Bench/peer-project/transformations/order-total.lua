-- order-total: sums an order's products (price * quantity) into a total and an item count, the
-- kind of enrichment a revenue destination needs. The events carry 100 products each (~7 KB), so
-- this case measures large arrays: lazy, every element read, the array written back unchanged.
-- Its peer is Bench/peers/order_total.js (the same code in Node's `vm`); scripts/bench checks
-- that both answer every event alike.

function transformEvent(event, metadata)
  local properties = event.properties
  if type(properties) ~= "table" or type(properties.products) ~= "table" then return event end
  local total, count = 0, 0
  for _, p in ipairs(properties.products) do
    if type(p.price) == "number" and math.type(p.quantity) == "integer" then
      total = total + p.price * p.quantity
      count = count + p.quantity
    end
  end
  properties.total = math.floor(total * 100 + 0.5) / 100
  properties.item_count = count
  return event
end

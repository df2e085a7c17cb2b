-- expect: timeout
-- Full collections of a 200k-table heap, one C call each, forever.
function transformEvent(event)
  local keep = {}
  for i = 1, 200000 do keep[i] = {i} end
  while true do collectgarbage() end
end

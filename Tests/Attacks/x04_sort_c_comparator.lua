-- expect: timeout
-- table.sort of 1M numbers with a C function (rawequal) as the comparator: the sort and every comparison run in C.
function transformEvent(event)
  local t = {}
  for i = 1, 1000000 do t[i] = (i * 7919) % 1000003 end
  while true do table.sort(t, rawequal) end
end

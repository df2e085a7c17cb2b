-- expect: error
-- An inconsistent comparator: Lua detects it ("invalid order function for sorting") or sorts garbage; either way no hang.
-- also-ok: no-escape
function transformEvent(event)
  local t = {}
  for i = 1, 1000 do t[i] = i end
  table.sort(t, function(a, b) return true end)
  event.first = t[1]
  return event
end

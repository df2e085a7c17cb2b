-- expect: timeout
-- gsub with an empty pattern matches at each of 12M positions inside one C call.
-- also-ok: memory
function transformEvent(event)
  local s = string.rep("a", 12 * 1000 * 1000)
  while true do s:gsub("", "") end
end

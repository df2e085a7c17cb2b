-- expect: timeout
-- load() compiles 4 MB of source in one C call, over and over.
-- also-ok: memory
function transformEvent(event)
  local src = string.rep("a=1 ", 1000000)
  while true do load(src) end
end

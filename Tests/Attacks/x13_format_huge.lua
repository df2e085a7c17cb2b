-- expect: memory
-- string.format with a 12 MB argument, twice per call, until memory runs out.
-- also-ok: timeout
function transformEvent(event)
  local s = string.rep("x", 12 * 1000 * 1000)
  local parts = {}
  while true do parts[#parts + 1] = string.format("%s%s", s, s) end
end

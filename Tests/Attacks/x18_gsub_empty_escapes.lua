-- expect: timeout
-- gsub with a replacement of 4 Mi '%1' escapes of an empty capture: expanding one match adds nothing and allocates nothing.
function transformEvent(event)
  local repl = string.rep("%1", 4 * 1024 * 1024)
  local s = string.rep("b", 2000)
  local _, n = s:gsub("(x*)", repl)
  return { n = n }
end

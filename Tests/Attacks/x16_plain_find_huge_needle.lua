-- expect: timeout
-- Plain find with an 8 MB needle: each candidate position is an 8 MB compare.
function transformEvent(event)
  local needle = string.rep("a", 8 * 1024 * 1024) .. "b"
  local hay = string.rep("a", 8 * 1024 * 1024 + 5000)
  return { found = hay:find(needle, 1, true) ~= nil }
end

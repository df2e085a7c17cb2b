-- warehouse_rows: rebuild and compare rows sent by a reverse-ETL source.
--
-- A row arrives as a list of [key, value] pairs (already JSON-decoded by the
-- caller): { {"name", "Acme"}, {"plan", "pro"} }.
--
--   local rows = require("warehouse_rows")
--   local obj, err = rows.from_pairs(list)   --> { name = "Acme", plan = "pro" } or nil, reason
--   rows.changed_keys(new_obj, old_obj)      --> sorted list of keys whose value changed
--   rows.is_empty(v)                         --> true for nil, "" and JSON null
--
-- "Empty" values (nil, "" and JSON null) count as absent: a key that is only in
-- the new row with an empty value is not a change, and neither is "" -> null.
-- A value that becomes empty, or a key that disappears, is a change. Other values
-- are compared deeply (tables key by key; 1 and 1.0 are equal, "1" and 1 are not).
-- Any userdata value is taken to be json.null (the only userdata a decoded event
-- contains), so the comparison does not depend on how the caller decoded the row.

local M = {}

function M.is_empty(v)
  return v == nil or v == "" or type(v) == "userdata"
end

-- Builds an object from a list of [key, value] pairs; a repeated key keeps its
-- last value. Returns nil and a reason when `list` does not have that shape.
function M.from_pairs(list)
  if type(list) ~= "table" or (#list == 0 and next(list) ~= nil) then
    return nil, "is not a list of [key, value] pairs"
  end
  local obj = {}
  for i = 1, #list do
    local pair = list[i]
    if type(pair) ~= "table" or type(pair[1]) ~= "string" then
      return nil, ("has a bad entry at position %d (want [\"key\", value])"):format(i)
    end
    obj[pair[1]] = pair[2]
  end
  return obj
end

local function deep_equal(a, b)
  if a == b then
    return true
  end
  if type(a) ~= "table" or type(b) ~= "table" then
    return false
  end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

-- Returns the keys (sorted) whose value differs between `new` and `old`.
-- An empty list means nothing changed.
function M.changed_keys(new, old)
  local changed, seen = {}, {}
  local function check(key)
    if seen[key] then
      return
    end
    seen[key] = true
    local a, b = new[key], old[key]
    if not (M.is_empty(a) and M.is_empty(b)) and not deep_equal(a, b) then
      changed[#changed + 1] = key
    end
  end
  for key in pairs(new) do
    check(key)
  end
  for key in pairs(old) do
    check(key)
  end
  table.sort(changed)
  return changed
end

return M

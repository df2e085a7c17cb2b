-- rename-traits: rename trait keys to the names a destination expects.
--
-- For every pair in RENAMES, in `traits` and in `context.traits`:
--   * old key present, new key unset: the value moves to the new key and one
--     line is logged: "renamed firstname -> first_name in traits";
--   * both present: the new key wins, the old key is removed, and the log line
--     says "dropped firstname (first_name already set) in traits".
-- A new key holding JSON null or "" counts as unset, so a real old value is not
-- thrown away in favour of an empty one.
-- Other keys, and events without traits, are kept unchanged.
--
-- Configure: edit RENAMES (old name, new name), applied top to bottom.

local RENAMES = {
  { "firstname", "first_name" },
  { "lastname", "last_name" },
  { "phone_number", "phone" },
  { "companyName", "company" },
}

local function present(v)
  return v ~= nil and v ~= json.null and v ~= ""
end

local function rename_keys(traits, where)
  if type(traits) ~= "table" then
    return
  end
  for _, pair in ipairs(RENAMES) do
    local old, new = pair[1], pair[2]
    if traits[old] ~= nil then
      if present(traits[new]) then
        log(("dropped %s (%s already set) in %s"):format(old, new, where))
      else
        traits[new] = traits[old]
        log(("renamed %s -> %s in %s"):format(old, new, where))
      end
      traits[old] = nil
    end
  end
end

function transformEvent(event, metadata)
  rename_keys(event.traits, "traits")
  if type(event.context) == "table" then
    rename_keys(event.context.traits, "context.traits")
  end
  return event
end

-- internal_email: recognise internal (staff or test) email addresses.
--
-- An address is internal when either
--   * its domain (the part after the last "@") is in the `domains` list you pass,
--     compared case-insensitively and exactly: "mail.example.com" is NOT matched
--     by "example.com" unless you list it too; or
--   * it is a "+test" alias: one of the "+"-tags of the local part is "test"
--     (jane+test@anything.com, JANE+Test@x.io, jane+qa+test@x.io),
--     case-insensitively. jane+testing@x.io is not an alias.
-- Leading/trailing spaces are ignored. Anything that is not a string is never internal.
--
--   local internal_email = require("internal_email")
--   internal_email.is_internal("Jane@RudderStack.com", { "rudderstack.com" })  --> true
--   internal_email.event_emails(event)  --> the string emails found in the event
--   internal_email.first_internal(event, domains)  --> first internal email, or nil

local M = {}

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Returns true when `addr` is an internal address. `domains` is a list of
-- domain names; when it is nil only "+test" aliases are detected.
function M.is_internal(addr, domains)
  if type(addr) ~= "string" then
    return false
  end
  local localpart, domain = trim(addr):lower():match("^(.*)@([^@]+)$")
  if not localpart then
    return false
  end
  if (localpart .. "+"):find("+test+", 1, true) then
    return true
  end
  for _, d in ipairs(domains or {}) do
    if type(d) == "string" and domain == d:lower() then
      return true
    end
  end
  return false
end

-- The places an event may carry the user's email, in the order they are checked.
local EMAIL_PATHS = {
  { "context", "traits", "email" },
  { "traits", "email" },
  { "properties", "email" },
}

local function value_at(event, path)
  local node = event
  for _, key in ipairs(path) do
    if type(node) ~= "table" then
      return nil
    end
    node = node[key]
  end
  return node
end

-- Returns a list of the email values (strings only) found in
-- context.traits.email, traits.email and properties.email.
function M.event_emails(event)
  local found = {}
  for _, path in ipairs(EMAIL_PATHS) do
    local value = value_at(event, path)
    if type(value) == "string" then
      found[#found + 1] = value
    end
  end
  return found
end

-- Returns the first internal email of the event, or nil when there is none.
function M.first_internal(event, domains)
  for _, addr in ipairs(M.event_emails(event)) do
    if M.is_internal(addr, domains) then
      return addr
    end
  end
  return nil
end

return M

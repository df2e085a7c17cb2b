-- mask-pii: pseudonymise emails and mask phone numbers before they leave RudderStack.
--
-- Looks at the top-level keys of `traits`, `context.traits` and `properties`
-- (key names compared case-insensitively; nested objects are not visited):
--   * EMAIL_KEYS: a string email becomes "fnv1a:" .. 8 hex digits, the FNV-1a
--     32-bit hash of the trimmed, lowercased address. The same address always
--     gives the same mask, so users can still be joined across events.
--     This is NOT cryptographic: 32 bits, no salt, easy to brute-force. It
--     hides addresses from casual view; it is not anonymisation.
--   * PHONE_KEYS: a phone (string or number) keeps only its last 2 digits:
--     "+1 (415) 555-0132" -> "***32". Values with fewer than 7 digits are not
--     real phone numbers and become "***" with no digits at all.
-- Empty strings, JSON null and other non-string values are left unchanged, and
-- so are values that are already masked, so running it twice changes nothing.
--
-- Configure: edit EMAIL_KEYS and PHONE_KEYS (lowercase key names).

local EMAIL_KEYS = { email = true }
local PHONE_KEYS = { phone = true, phone_number = true, mobile = true }

-- FNV-1a, 32-bit: integer arithmetic only, kept in 32 bits with & 0xffffffff.
local function fnv1a32(s)
  local h = 0x811c9dc5
  for i = 1, #s do
    h = ((h ~ s:byte(i)) * 0x01000193) & 0xffffffff
  end
  return h
end

local function mask_email(v)
  if type(v) ~= "string" or v == "" or v:match("^fnv1a:%x+$") then
    return v
  end
  local normalised = v:gsub("^%s+", ""):gsub("%s+$", ""):lower()
  return ("fnv1a:%08x"):format(fnv1a32(normalised))
end

local function mask_phone(v)
  if type(v) == "number" then
    v = ("%.0f"):format(v)
  elseif type(v) ~= "string" or v == "" or v:match("^%*%*%*%d*$") then
    return v
  end
  local digits = v:gsub("%D", "")
  if #digits < 7 then
    return "***"
  end
  return "***" .. digits:sub(-2)
end

local function mask_object(obj)
  if type(obj) ~= "table" then
    return
  end
  for key, value in pairs(obj) do
    local k = type(key) == "string" and key:lower() or ""
    if EMAIL_KEYS[k] then
      obj[key] = mask_email(value)
    elseif PHONE_KEYS[k] then
      obj[key] = mask_phone(value)
    end
  end
end

function transformEvent(event, metadata)
  mask_object(event.traits)
  mask_object(event.properties)
  if type(event.context) == "table" then
    mask_object(event.context.traits)
  end
  return event
end

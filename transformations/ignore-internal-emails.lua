-- ignore-internal-emails: drop events sent by internal users.
--
-- An event is dropped when context.traits.email, traits.email or properties.email
-- is an internal address (see libraries/internal_email.lua):
--   * its domain is one of INTERNAL_DOMAINS below (case-insensitive, exact match:
--     list subdomains such as "eu.rudderstack.com" separately if you want them), or
--   * it is a "+test" alias such as jane+test@gmail.com.
-- Missing emails and values that are not strings (numbers, JSON null) never drop
-- an event. Kept events are returned unchanged.
--
-- Configure: edit INTERNAL_DOMAINS.

local internal_email = require("internal_email")

local INTERNAL_DOMAINS = {
  "rudderstack.com",
  "internal.example.com",
}

function transformEvent(event, metadata)
  local addr = internal_email.first_internal(event, INTERNAL_DOMAINS)
  if addr then
    log("dropped: internal email <" .. addr .. ">")
    return nil
  end
  return event
end

-- ignore-internal-emails, peer-equal: exactly the logic of ../shared/bench/ignore_internal_emails.js
-- (and peer_python.py), so scripts/bench compares the same transformation across runtimes.
--
--   const INTERNAL = /@(rudderlabs|rudderstack)\.com$|\+test/;
--   email = typeof context.traits.email === 'string' ? email.toLowerCase() : null
--   internal -> return null (dropped), else the event unchanged.
--
-- Only context.traits.email is read. JSON null arrives as json.null (a light userdata), so the
-- type() checks reject it like any other non-string. string.lower is ASCII-only where JS
-- toLowerCase is Unicode-aware (U+212A KELVIN SIGN lowers to "k"), so the two could disagree only
-- on such non-ASCII addresses; the generated events are ASCII, and scripts/bench checks that this
-- file and the Node peer drop exactly the same events.

function transformEvent(event, metadata)
  local context = event.context
  local traits = type(context) == "table" and context.traits
  local email = type(traits) == "table" and traits.email
  if type(email) == "string" then
    email = email:lower()
    if email:find("+test", 1, true)
      or email:sub(-15) == "@rudderlabs.com"
      or email:sub(-16) == "@rudderstack.com" then
      return nil
    end
  end
  return event
end

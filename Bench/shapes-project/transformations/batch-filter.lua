-- batch-filter: the peer-equal filter (ignore-internal-emails) written as transformBatch.
function transformBatch(events, metadata)
  local out = {}
  for _, event in ipairs(events) do
    local context = event.context
    local traits = type(context) == "table" and context.traits
    local email = type(traits) == "table" and traits.email
    local keep = true
    if type(email) == "string" then
      email = email:lower()
      if email:find("+test", 1, true) or email:sub(-15) == "@rudderlabs.com" or email:sub(-16) == "@rudderstack.com" then
        keep = false
      end
    end
    if keep then out[#out + 1] = event end
  end
  return out
end

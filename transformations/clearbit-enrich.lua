-- clearbit-enrich: add the company behind a lead's email domain to quote requests.
--
-- Handles two kinds of events; every other event is returned unchanged:
--   * track events whose `event` is one of TRACK_EVENTS ("Enterprise Quote Requested"),
--   * identify events.
-- The email is the first string, in this order, of context.traits.email, traits.email and
-- properties.email whose domain is a company's: free webmail domains (gmail.com, outlook.com,
-- ... see libraries/company.lua, plus EXTRA_FREE_MAIL) are skipped, so they cost no lookup.
-- The domain (lowercased) is looked up with enrich("clearbit", domain):
--   * found: context.traits.company becomes company.summary(answer), i.e.
--     { name, domain, industry, employees, employees_range, country, revenue_range };
--     identify events also get it as traits.company. An existing `company` is replaced.
--     Logs "enriched <domain>".
--   * failed (provider down, timeout, unknown domain -> "not found: <domain>"): the event
--     is kept as it was, plus context.enrichment_error = <message>.
--     Logs "no company for <domain> <message>".
-- Events are never dropped and never fail because of the lookup. To fail them instead
-- (error kind `enrichment`), call enrich("clearbit", domain, { required = true }).
--
-- Configure: the "clearbit" provider (with `transform test`, providers/clearbit.stub.json
-- answers for it), TRACK_EVENTS, EXTRA_FREE_MAIL.

local company = require("company")

local TRACK_EVENTS = {
  ["Enterprise Quote Requested"] = true,
}

-- More domains to treat as personal mailboxes, as keys: { ["mail.example.org"] = true }.
local EXTRA_FREE_MAIL = {}

local EMAIL_PATHS = {
  { "context", "traits", "email" },
  { "traits", "email" },
  { "properties", "email" },
}

local function value_at(t, path)
  for _, key in ipairs(path) do
    if type(t) ~= "table" then
      return nil
    end
    t = t[key]
  end
  return t
end

-- The first company (non-free-mail) domain among the event's emails, or nil.
local function company_domain(event)
  for _, path in ipairs(EMAIL_PATHS) do
    local domain = company.domain_of(value_at(event, path))
    if domain and not company.is_free_mail(domain, EXTRA_FREE_MAIL) then
      return domain
    end
  end
  return nil
end

-- parent[key] as a table: created when missing or JSON null; nil when it holds something else.
local function table_at(parent, key)
  local v = parent[key]
  if v == nil or v == json.null then
    v = {}
    parent[key] = v
  end
  if type(v) ~= "table" then
    return nil
  end
  return v
end

local function wanted(event)
  if event.type == "identify" then
    return true
  end
  return event.type == "track" and type(event.event) == "string" and TRACK_EVENTS[event.event] == true
end

function transformEvent(event, metadata)
  if not wanted(event) then
    return event
  end
  local domain = company_domain(event)
  if not domain then
    return event
  end

  local answer, err = enrich("clearbit", domain)
  local summary = company.summary(answer)
  local context = table_at(event, "context")

  if summary == nil then
    err = err or "unexpected answer from clearbit"
    if context then
      context.enrichment_error = err
    end
    log("no company for", domain, err)
    return event
  end

  local context_traits = context and table_at(context, "traits")
  if context_traits then
    context_traits.company = summary
  end
  if event.type == "identify" then
    local traits = table_at(event, "traits")
    if traits then
      traits.company = company.summary(answer) -- its own copy, not a shared table
    end
  end
  log("enriched", domain)
  return event
end

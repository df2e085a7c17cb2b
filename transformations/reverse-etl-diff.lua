-- reverse-etl-diff: turn changed warehouse rows into Salesforce account (group) calls.
--
-- Input: a reverse-ETL row whose traits.new_truth and traits.old_truth are JSON
-- strings of [key, value] pairs, e.g. "[[\"name\",\"Acme\"],[\"plan\",\"pro\"]]".
-- old_truth may be missing, null or "" (a row seen for the first time).
--   * Nothing changed (see libraries/warehouse_rows.lua; a key only in the new
--     row whose value is nil, null or "" is not a change): the event is dropped.
--   * Otherwise a group event is returned: traits = the new row; userId,
--     anonymousId, messageId, groupId, channel and timestamps are copied from
--     the input; the input context is kept; integrations.Salesforce = true; and,
--     when the input traits.sfdc_id is a non-empty string or an integer,
--     context.externalId gets { type = "Salesforce-Account", id = sfdc_id }
--     (replacing any earlier entry of that type, keeping the others).
--   * new_truth missing, not valid JSON, or not a list of pairs: error (that
--     event fails, the rest of the batch goes on). Same for a bad old_truth.
--
-- Configure: EXTERNAL_ID_TYPE and DESTINATION below.

local rows = require("warehouse_rows")

local EXTERNAL_ID_TYPE = "Salesforce-Account"
local DESTINATION = "Salesforce"
local COPIED_FIELDS = {
  "userId", "anonymousId", "messageId", "groupId", "channel",
  "originalTimestamp", "sentAt", "timestamp",
}

local function fail(fmt, ...)
  error("reverse-etl-diff: " .. fmt:format(...), 0)
end

-- Decodes traits[field] into an object; `required` makes a missing value an error.
local function read_row(traits, field, required)
  local raw = traits[field]
  if rows.is_empty(raw) then
    if required then
      fail("traits.%s is missing", field)
    end
    return {}
  end
  local list = raw
  if type(raw) == "string" then
    local ok, decoded = pcall(json.decode, raw)
    if not ok then
      fail("traits.%s is not valid JSON: %s", field, tostring(decoded))
    end
    list = decoded
  end
  local obj, reason = rows.from_pairs(list)
  if not obj then
    fail("traits.%s %s", field, reason)
  end
  return obj
end

local function sfdc_id(traits)
  local id = traits.sfdc_id
  if type(id) == "string" and id ~= "" then
    return id
  elseif math.type(id) == "integer" then
    return tostring(id)
  end
  return nil
end

local function table_or_new(v)
  return type(v) == "table" and v or {}
end

function transformEvent(event, metadata)
  local traits = event.traits
  if type(traits) ~= "table" then
    fail("event has no traits")
  end
  local new = read_row(traits, "new_truth", true)
  local old = read_row(traits, "old_truth", false)

  local changed = rows.changed_keys(new, old)
  if #changed == 0 then
    log("no change, dropped")
    return nil
  end
  log("changed: " .. table.concat(changed, ", "))

  local out = { type = "group", traits = new }
  for _, field in ipairs(COPIED_FIELDS) do
    out[field] = event[field]
  end

  out.context = table_or_new(event.context)
  local id = sfdc_id(traits)
  if id then
    local ids = {}
    for _, entry in ipairs(table_or_new(out.context.externalId)) do
      if type(entry) ~= "table" or entry.type ~= EXTERNAL_ID_TYPE then
        ids[#ids + 1] = entry
      end
    end
    ids[#ids + 1] = { type = EXTERNAL_ID_TYPE, id = id }
    out.context.externalId = ids
  end

  out.integrations = table_or_new(event.integrations)
  out.integrations[DESTINATION] = true
  return out
end

-- read-only-filter: reads a few fields and returns the event unchanged (the performance issue's
-- ">= 1M events/s/core" case). Keeps track and identify calls that carry a non-empty userId or
-- anonymousId; drops everything else (other types, or no usable id).

local KEPT = { track = true, identify = true }

local function usable(id)
  return type(id) == "string" and id ~= ""
end

function transformEvent(event, metadata)
  if KEPT[event.type] and (usable(event.userId) or usable(event.anonymousId)) then
    return event
  end
  return nil
end

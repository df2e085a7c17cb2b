-- drop-anonymous-pages: drop page views from visitors who are not logged in.
--
-- A page call (type "page", any letter case) is dropped when it has no usable
-- userId: missing, JSON null, or a string that is empty or only spaces.
-- A numeric userId counts as set. Every other event (identify, track, screen,
-- pages with a userId, ...) is returned unchanged.
--
-- Configure: nothing. To drop anonymous screen views too, add "screen" to
-- DROPPED_TYPES.

local DROPPED_TYPES = { page = true }

local function has_user_id(event)
  local id = event.userId
  if type(id) == "string" then
    return id:find("%S") ~= nil
  end
  return type(id) == "number"
end

function transformEvent(event, metadata)
  local kind = type(event.type) == "string" and event.type:lower() or ""
  if DROPPED_TYPES[kind] and not has_user_id(event) then
    return nil
  end
  return event
end

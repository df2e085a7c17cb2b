-- rename-trait: renames a trait and masks the email's local part (a nested change).
function transformEvent(event)
  local traits = type(event.context) == "table" and event.context.traits
  if type(traits) == "table" then
    traits.first_name = traits.firstname
    traits.firstname = nil
    if type(traits.email) == "string" then traits.email = traits.email:gsub("^[^@]+", "***") end
  end
  return event
end

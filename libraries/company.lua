-- company: helpers for enriching leads with the company behind their email domain.
--
--   local company = require("company")
--   company.domain_of("Jane.Doe@Acme.COM ")  --> "acme.com"
--   company.domain_of(json.null)             --> nil (also for numbers, "", "no-at-sign", "a@b")
--   company.is_free_mail("gmail.com")        --> true: a personal mailbox, not a company
--   company.summary(clearbit_company)        --> { name, domain, industry, employees,
--                                                  employees_range, country, revenue_range }
--
-- domain_of takes the part after the last "@", trimmed and lowercased. It returns nil
-- unless that looks like a host name: letters, digits, "-" and ".", at least one dot,
-- no empty labels. A trailing dot ("acme.com.") is dropped.
--
-- is_free_mail knows the common webmail providers (FREE_MAIL below); pass a second
-- table of extra domains (as keys, e.g. { ["mail.example.org"] = true }) to add more.
-- Subdomains are not matched: list them too.
--
-- summary picks the useful fields of a Clearbit company object:
--   name, domain                          -> name, domain
--   category.industry                     -> industry
--   metrics.employees                     -> employees
--   metrics.employeesRange                -> employees_range
--   geo.country                           -> country
--   metrics.estimatedAnnualRevenue        -> revenue_range
-- A field that is missing, JSON null or of the wrong type is left out. It returns nil
-- when the answer is not an object at all.
-- Libraries do not rely on `json` here: any userdata value is taken to be json.null
-- (the only userdata a decoded answer contains).

local M = {}

local FREE_MAIL = {
  ["gmail.com"] = true, ["googlemail.com"] = true,
  ["yahoo.com"] = true, ["yahoo.co.uk"] = true, ["yahoo.fr"] = true, ["ymail.com"] = true,
  ["hotmail.com"] = true, ["hotmail.co.uk"] = true, ["outlook.com"] = true,
  ["live.com"] = true, ["msn.com"] = true,
  ["icloud.com"] = true, ["me.com"] = true, ["mac.com"] = true,
  ["aol.com"] = true, ["gmx.com"] = true, ["gmx.de"] = true, ["gmx.net"] = true,
  ["web.de"] = true, ["mail.com"] = true, ["proton.me"] = true, ["protonmail.com"] = true,
  ["zoho.com"] = true, ["yandex.ru"] = true, ["yandex.com"] = true, ["mail.ru"] = true,
  ["qq.com"] = true, ["163.com"] = true, ["126.com"] = true,
  ["fastmail.com"] = true, ["hey.com"] = true, ["tutanota.com"] = true,
}

-- The lowercased domain of an email address, or nil when `addr` is not a usable address.
function M.domain_of(addr)
  if type(addr) ~= "string" then
    return nil
  end
  local s = addr:gsub("^%s+", ""):gsub("%s+$", ""):lower()
  local localpart, domain = s:match("^(.*)@([^@]*)$")
  if not localpart or localpart == "" then
    return nil
  end
  domain = domain:gsub("%.$", "")
  if domain == "" or not domain:match("^[%w%-%.]+$") or not domain:find(".", 1, true)
      or domain:find("..", 1, true) or domain:match("^%.") then
    return nil
  end
  return domain
end

-- True when `domain` belongs to a free webmail provider (no company to look up).
function M.is_free_mail(domain, extra)
  if type(domain) ~= "string" then
    return false
  end
  domain = domain:lower()
  return FREE_MAIL[domain] == true or (type(extra) == "table" and extra[domain] == true)
end

-- The value at a path of keys, or nil when a step is missing, JSON null or not an object.
local function field(t, ...)
  local node = t
  for i = 1, select("#", ...) do
    if type(node) ~= "table" then
      return nil
    end
    node = node[select(i, ...)]
  end
  if type(node) == "userdata" then -- json.null
    return nil
  end
  return node
end

local function string_or_nil(v)
  if type(v) == "string" and v ~= "" then
    return v
  end
  return nil
end

local function number_or_nil(v)
  if type(v) == "number" then
    return v
  end
  return nil
end

-- The summary of a Clearbit company object (see the header), or nil when `c` is not a table.
function M.summary(c)
  if type(c) ~= "table" then
    return nil
  end
  return {
    name = string_or_nil(field(c, "name")),
    domain = string_or_nil(field(c, "domain")),
    industry = string_or_nil(field(c, "category", "industry")),
    employees = number_or_nil(field(c, "metrics", "employees")),
    employees_range = string_or_nil(field(c, "metrics", "employeesRange")),
    country = string_or_nil(field(c, "geo", "country")),
    revenue_range = string_or_nil(field(c, "metrics", "estimatedAnnualRevenue")),
  }
end

return M

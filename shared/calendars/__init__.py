"""Published tax calendars shipped with ClearCard (TOML, one per year, each naming its source)."""

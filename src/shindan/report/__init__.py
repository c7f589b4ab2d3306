"""Reports for people: offline HTML (Jinja2) with embedded figures."""

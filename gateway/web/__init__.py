"""Server-rendered pages: login and consent (and, later, the dashboard)."""

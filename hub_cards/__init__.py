"""Model-card templates, export to a Hub-ready folder, and the Spaces demo app."""

"""Small shared helpers: progress bars and atomic output."""

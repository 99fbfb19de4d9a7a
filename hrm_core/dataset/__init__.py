"""What models learn from: the warehouse's features as model-ready arrays (``MarketData``), the
windows and chunks a trainer samples, outcome targets, and the synthetic scenario markets."""

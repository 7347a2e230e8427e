project = "pytest-isolate"
author = "pytest-isolate developers"
extensions: list = []
html_theme = "alabaster"
exclude_patterns = ["_build"]

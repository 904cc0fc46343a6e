"""`vram-ml serve`: the web calculator (app.py), its JSON API (routes.py), the form it draws
from the Spec (form.py), simulate as a job (simulation_jobs.py), and the static page (static/).

Importing this package imports nothing heavy; fastapi loads with `vram_ml.web.app`.
"""

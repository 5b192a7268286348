"""`make demo` / `python -m autovit_ray.demo`: the main job on the embedded digits (see __main__.py)."""

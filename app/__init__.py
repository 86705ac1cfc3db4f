"""The Gradio app, safe to serve to the public: settings (what the operator allows), models (what a visitor may
pick, loaded in the background), pipeline (one analysis end to end), layout (the page, cancellable), media (which
videos it takes), uploads (what a visitor's requests may carry, and for how long uploads are kept), summary (the
table and timeline), cli (`python app.py`). Rendering and the results JSON are the library's."""

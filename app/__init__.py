"""The Gradio app, safe to serve to the public: settings (what the operator allows), models (what a visitor may
pick, loaded in the background), pipeline (one analysis end to end), layout (the page, cancellable), media (which
uploads it takes, trimming), summary (the table and timeline). Rendering and the results JSON are the library's."""

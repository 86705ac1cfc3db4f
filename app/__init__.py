"""The Gradio app: page layout (layout), one analysis end to end (pipeline), the model seam (inference), overlay
rendering (render), PyAV reading and writing (media), the table and timeline (summary), the results JSON."""

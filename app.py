"""The Hugging Face Space entry point: `python app.py [--port 7860] [--max-seconds 60]`."""

from app.cli import main

if __name__ == "__main__":
    main()

"""``python -m app``: serve Jobcast, configured from the environment (:mod:`app.serve`)."""

from app.serve import main

if __name__ == "__main__":
    main()

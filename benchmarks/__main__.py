"""``python -m benchmarks``."""

if __name__ == "__main__":
    from benchmarks.run import main

    raise SystemExit(main())

"""The causelog command line (click)."""

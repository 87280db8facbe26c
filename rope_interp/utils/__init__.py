"""Small utilities every floor may use: notes to the user (`logs`), all-or-nothing file writes and
the one table writer (`atomic`), what a path is (`files`), number parsing and formatting
(`numbers`), content fingerprints of weights, tokens and code (`fingerprint`)."""

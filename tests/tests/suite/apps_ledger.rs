//! Ledger rows of sig-apps not yet covered elsewhere: being written.

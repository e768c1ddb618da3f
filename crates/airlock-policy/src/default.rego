package airlock.default

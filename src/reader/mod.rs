//! Random access to the bytes of any entry: plain tar by positioned reads, gzip by inflating
//! from the nearest access point, with decompressed chunks kept in a shared, byte-bounded cache.

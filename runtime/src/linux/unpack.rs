//! (being written) Safe unpacking of one layer into a snapshot directory.

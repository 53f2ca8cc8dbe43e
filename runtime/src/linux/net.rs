//! (being written) Container networking: none, host, or a bridge with veth pairs and published ports.

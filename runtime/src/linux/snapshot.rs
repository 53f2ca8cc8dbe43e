//! (being written) Content-addressed layer snapshots shared by the containers of an image.

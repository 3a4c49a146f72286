//! Copying a project folder into a job workspace the way a CI checkout looks.

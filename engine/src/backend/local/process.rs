//! Process groups: spawn a child as the leader of a new group, kill the group as a whole.

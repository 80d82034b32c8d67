//! Memory owners: the dlopen'd Ascend runtime (ACL).

pub mod acl;

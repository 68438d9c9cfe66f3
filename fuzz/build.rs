//! Build script: the targets embed lfeval, which links libpython; an rpath lets them load it.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}

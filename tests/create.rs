//! Images made through imago (demo, benchmarks) are images QEMU accepts.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use imgchain::image::create::{NewImage, create, write};
use imgchain::image::probe::Format;

#[test]
#[cfg_attr(
    not(all(tool_qemu_img, tool_qemu_io)),
    ignore = "needs qemu-img, qemu-io"
)]
fn imago_images_pass_qemu_img_check_and_read_back() {
    let tmp = tempdir();
    let dir = tmp.path();
    let base = dir.join("base.img");
    let top = dir.join("top.qcow2");
    create(
        &base,
        &NewImage {
            format: Format::Raw,
            ..NewImage::qcow2(8 << 20)
        },
    )
    .unwrap();
    write(&base, Format::Raw, 0, &[0x11; 65536]).unwrap();
    let new = NewImage {
        backing: Some(("base.img", Format::Raw)),
        cluster_size: 4096,
        ..NewImage::qcow2(16 << 20)
    };
    create(&top, &new).unwrap();
    write(&top, Format::Qcow2, 1 << 20, &[0x22; 8192]).unwrap();

    qemu_check(&top);
    let info = qemu_info(&top);
    assert_eq!(info["virtual-size"], 16 << 20);
    assert_eq!(info["cluster-size"], 4096);
    assert_eq!(info["backing-filename"], "base.img");
    assert_eq!(info["backing-filename-format"], "raw");
    qemu_io(&top, "read -P 0x11 0 64k");
    qemu_io(&top, "read -P 0x22 1M 8k");
    qemu_io(&top, "read -P 0 2M 4k");
}

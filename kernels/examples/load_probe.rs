//! What a storage load costs on this adapter, by width: read-only and copy kernels over 64 MiB,
//! with 4-, 8- and 16-byte elements. On lavapipe (Mesa 22.3) every storage load is a loop over
//! the SIMD lanes with a branch per lane and per component, so the cost is per component,
//! whatever its width; benches/NOTES.md ("The CPU matvec reads u64 words") has the figures.
//! `cargo run --release -p hartonomous-kernels --example load_probe`
//!
//! It drives wgpu directly (the kernels' launchers would hide what is being measured) and asks
//! for 64-bit shader integers, skipping the u64 kernels where the adapter lacks them. It also
//! prints the adapter's uniform binding limit: gallivm gathers uniform-buffer loads without the
//! per-lane loop, but 64 KiB (lavapipe's) is no place for weights. The last
//! probes read the same bytes as a texture (`textureLoad` of rg32uint and rgba32uint texels),
//! which gallivm compiles through its texel-fetch path rather than `emit_load_mem`.

use std::time::Instant;

const BYTES: u64 = 64 << 20;

/// (name, element type, elements an invocation reads, whether it copies rather than reads).
const PROBES: [(&str, &str, u32, bool); 11] = [
    ("copy vec4<f32>, 1 an invocation", "vec4<f32>", 1, true),
    ("copy vec2<u64>, 1 an invocation", "vec2<u64>", 1, true),
    ("copy vec2<u64>, 4 an invocation", "vec2<u64>", 4, true),
    ("read u32, 32 an invocation", "u32", 32, false),
    ("read vec4<u32>, 8 an invocation", "vec4<u32>", 8, false),
    ("read u64, 16 an invocation", "u64", 16, false),
    ("read vec2<u64>, 8 an invocation", "vec2<u64>", 8, false),
    ("read u64, 64 an invocation", "u64", 64, false),
    ("read vec2<u32>, 16 an invocation", "vec2<u32>", 16, false),
    ("read vec4<u64>, 4 an invocation", "vec4<u64>", 4, false),
    ("read vec4<u64>, 16 an invocation", "vec4<u64>", 16, false),
];

fn element_bytes(ty: &str) -> u64 {
    match ty {
        "u32" => 4,
        "u64" | "vec2<u32>" => 8,
        "vec4<u64>" => 32,
        _ => 16,
    }
}

/// A kernel over a 2-D grid of 64-wide workgroups: invocation i reads elements [i·n, i·n + n)
/// and either writes them to the same places in dst or writes their xor to dst[i].
fn source(ty: &str, n: u32, copy: bool) -> String {
    let mut body = String::new();
    for j in 0..n {
        if copy {
            body += &format!("    dst[base + {j}u] = src[base + {j}u];\n");
        } else {
            body += &format!("    acc = acc ^ src[base + {j}u];\n");
        }
    }
    let (init, store) = if copy { ("", "") } else { ("    var acc = ELEMENT();\n", "    dst[i] = acc;\n") };
    format!(
        "@group(0) @binding(0) var<storage, read> src: array<ELEMENT>;
@group(0) @binding(1) var<storage, read_write> dst: array<ELEMENT>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let i = (wid.y * ng.x + wid.x) * 64u + lid;
    let base = i * {n}u;
{init}{body}{store}}}
"
    )
    .replace("ELEMENT", if ty == "vec4<f32>" && !copy { "vec4<u32>" } else { ty })
}

/// Texels of the 2-D texture the texture probes read: as wide as the adapter allows.
fn texture_width(limit: u32) -> u32 {
    limit.min(16384)
}

/// A kernel that reads `n` consecutive texels an invocation (row-major over a texture `width`
/// wide, all in one row as `width` is a multiple of `n`) and writes their xor to dst[i].
fn texture_source(n: u32, width: u32) -> String {
    let body: String = (0..n).map(|j| format!("    acc = acc ^ textureLoad(src, vec2<i32>(x0 + {j}, y), 0);\n")).collect();
    format!(
        "@group(0) @binding(0) var src: texture_2d<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let i = (wid.y * ng.x + wid.x) * 64u + lid;
    let base = i * {n}u;
    let x0 = i32(base % {width}u);
    let y = i32(base / {width}u);
    var acc = vec4<u32>();
{body}    dst[i] = acc;
}}
"
    )
}

fn main() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let Some(adapter) = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all())).into_iter().next() else {
        eprintln!("no adapter (install mesa-vulkan-drivers for lavapipe)");
        std::process::exit(1);
    };
    let info = adapter.get_info();
    println!("adapter: {} ({:?}, {})", info.name, info.backend, info.driver_info);
    println!("uniform binding limit: {} bytes", adapter.limits().max_uniform_buffer_binding_size);
    let int64 = adapter.features().contains(wgpu::Features::SHADER_INT64);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & wgpu::Features::SHADER_INT64,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("a device");
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let src = device.create_buffer(&wgpu::BufferDescriptor { label: Some("src"), size: BYTES, usage, mapped_at_creation: false });
    let dst = device.create_buffer(&wgpu::BufferDescriptor { label: Some("dst"), size: BYTES, usage, mapped_at_creation: false });
    queue.write_buffer(&src, 0, &vec![1u8; BYTES as usize]);
    let time = |pipeline: &wgpu::ComputePipeline, bind_group: &wgpu::BindGroup, (gx, gy): (u32, u32)| {
        let run = || {
            let start = Instant::now();
            let mut encoder = device.create_command_encoder(&Default::default());
            for _ in 0..4 {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                pass.dispatch_workgroups(gx, gy, 1);
            }
            queue.submit([encoder.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
            start.elapsed().as_secs_f64() / 4.0
        };
        run();
        let mut times: Vec<f64> = (0..5).map(|_| run()).collect();
        times.sort_by(f64::total_cmp);
        times[2]
    };
    let pipeline_for = |name: &str, source: String| {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(source.into()) });
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let grid = |groups: u64| {
        let groups = groups as u32;
        if groups > 65535 { (256, groups / 256) } else { (groups, 1) }
    };
    for (name, ty, n, copy) in PROBES {
        if ty.contains("u64") && !int64 {
            println!("{name:<36} skipped: no 64-bit shader integers");
            continue;
        }
        let pipeline = pipeline_for(name, source(ty, n, copy));
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: src.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: dst.as_entire_binding() },
            ],
        });
        let seconds = time(&pipeline, &bind_group, grid(BYTES / (element_bytes(ty) * u64::from(n)) / 64));
        let read = BYTES as f64 / seconds / 1e9;
        let moved = if copy { format!("{:6.2} GB/s moved (read + write)", 2.0 * read) } else { String::new() };
        println!("{name:<36} {:8.2} ms  {read:6.2} GB/s read  {moved}", seconds * 1e3);
    }
    // The same 64 MiB as a texture: rows of `width` texels.
    let width = texture_width(device.limits().max_texture_dimension_2d);
    for (name, format, texel_bytes) in [
        ("read rg32uint texels, 8 an invocation", wgpu::TextureFormat::Rg32Uint, 8u32),
        ("read rgba32uint texels, 8 an invocation", wgpu::TextureFormat::Rgba32Uint, 16),
    ] {
        let height = (BYTES / u64::from(width * texel_bytes)) as u32;
        if height > device.limits().max_texture_dimension_2d {
            println!("{name:<36} skipped: {height} rows exceed the adapter's 2-D texture limit");
            continue;
        }
        let size = wgpu::Extent3d { width, height, depth_or_array_layers: 1 };
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some(name),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        queue.write_texture(
            texture.as_image_copy(),
            &vec![1u8; BYTES as usize],
            wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(width * texel_bytes), rows_per_image: Some(height) },
            size,
        );
        let pipeline = pipeline_for(name, texture_source(8, width));
        let view = texture.create_view(&Default::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&view) },
                wgpu::BindGroupEntry { binding: 1, resource: dst.as_entire_binding() },
            ],
        });
        let seconds = time(&pipeline, &bind_group, grid(BYTES / (u64::from(texel_bytes) * 8) / 64));
        println!("{name:<36} {:8.2} ms  {:6.2} GB/s read", seconds * 1e3, BYTES as f64 / seconds / 1e9);
    }
}

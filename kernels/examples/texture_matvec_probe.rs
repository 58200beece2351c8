//! What the texel copy of block-format weights buys the CPU matvec: the rows kernel for Q4_1
//! at SmolLM2's tied-output shape (49,152 × 576) as the launcher generates it for weights in a
//! buffer (u64 storage loads, 5 a two-block step) and for weights with a texel copy (3 texel
//! fetches a step), in one process, alternating. Both outputs must be bit-identical. On lavapipe
//! (Mesa 22.3) a storage load is a loop over the lanes for each component, a texel fetch one
//! gather of 16 bytes a lane (benches/NOTES.md, "Texel fetches").
//! `cargo run --release -p hartonomous-kernels --example texture_matvec_probe`
//!
//! It drives wgpu directly so that both variants run on the same bytes in one process (the
//! launcher picks one by the tensor).
use std::time::Instant;

use hartonomous_kernels::ops::qmatmul::qmatvec_rows_source;
use hartonomous_kernels::DType;

/// Texels in a row of the texture, as the kernels' uploads lay them out.
const WIDTH: u32 = 16384;

fn main() {
    let (n, k) = (49152u32, 576u32);
    let buf_src = qmatvec_rows_source(DType::Q4_1, n as usize, k as usize, 1, false).expect("the rows kernel expands");
    let tex_src = qmatvec_rows_source(DType::Q4_1, n as usize, k as usize, 1, true).expect("the rows kernel expands");
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all())).into_iter().next().unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & (wgpu::Features::SHADER_INT64 | wgpu::Features::SUBGROUP),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let bytes_w = (n as usize) * (k as usize) / 32 * 20;
    let mut s = 7u64;
    let wbytes: Vec<u8> = (0..bytes_w)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8 & 0x3F
        })
        .collect();
    let xs: Vec<f32> = (0..k as usize).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0).collect();
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let mk = |size: u64, usage| device.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage, mapped_at_creation: false });
    let x = mk(4 * k as u64, storage);
    queue.write_buffer(&x, 0, bytemuck::cast_slice(&xs));
    let w = mk(bytes_w as u64 + 64, storage);
    queue.write_buffer(&w, 0, &wbytes);
    let dummy = mk(1024, storage);
    let dummy2 = mk(1024, storage);
    let out = mk(4 * n as u64, storage);
    let params = mk(16, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
    queue.write_buffer(&params, 0, bytemuck::cast_slice(&[1u32, n, k, 0]));
    let width = WIDTH;
    let texels = (bytes_w as u32).div_ceil(16) + 2;
    let height = texels.div_ceil(width);
    let mut padded = wbytes.clone();
    padded.resize((width * height * 16) as usize, 0);
    let size = wgpu::Extent3d { width, height, depth_or_array_layers: 1 };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Uint,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    queue.write_texture(texture.as_image_copy(), &padded, wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(width * 16), rows_per_image: Some(height) }, size);
    let view = texture.create_view(&Default::default());
    let pipeline_for = |source: &str| {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: None, source: wgpu::ShaderSource::Wgsl(source.into()) });
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("qmatvec_rows"),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let (pb, pt) = (pipeline_for(&buf_src), pipeline_for(&tex_src));
    let bg = |p: &wgpu::ComputePipeline, tex: bool| {
        let wres = if tex { wgpu::BindingResource::TextureView(&view) } else { w.as_entire_binding() };
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: x.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: wres },
                wgpu::BindGroupEntry { binding: 2, resource: dummy.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: dummy2.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 4, resource: out.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 5, resource: params.as_entire_binding() },
            ],
        })
    };
    let (gb, gt) = (bg(&pb, false), bg(&pt, true));
    let groups = n.div_ceil(128);
    let run = |p: &wgpu::ComputePipeline, g: &wgpu::BindGroup, reps: u32| {
        let start = Instant::now();
        let mut encoder = device.create_command_encoder(&Default::default());
        for _ in 0..reps {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(p);
            pass.set_bind_group(0, g, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        queue.submit([encoder.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        start.elapsed().as_secs_f64() / reps as f64
    };
    let read = |g: &wgpu::ComputePipeline, b: &wgpu::BindGroup| {
        run(g, b, 1);
        let staging = mk(4 * n as u64, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let mut e = device.create_command_encoder(&Default::default());
        e.copy_buffer_to_buffer(&out, 0, &staging, 0, 4 * n as u64);
        queue.submit([e.finish()]);
        staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        let values: Vec<f32> = bytemuck::cast_slice(&staging.slice(..).get_mapped_range().unwrap()).to_vec();
        values
    };
    let (rb, rt) = (read(&pb, &gb), read(&pt, &gt));
    let same = rb.iter().zip(&rt).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    println!("adapter: {}", adapter.get_info().name);
    println!("outputs bit-identical: {same}/{n}");
    assert_eq!(same, n as usize, "the texel variant must compute the same sums");
    let (mut tb, mut tt) = (vec![], vec![]);
    for _ in 0..10 {
        tb.push(run(&pb, &gb, 10));
        tt.push(run(&pt, &gt, 10));
    }
    tb.sort_by(f64::total_cmp);
    tt.sort_by(f64::total_cmp);
    println!("storage loads (5 u64 a step): {:8.1} us  {:.2} GB/s of blocks", tb[5] * 1e6, bytes_w as f64 / tb[5] / 1e9);
    println!("texel fetches (3 a step):     {:8.1} us  {:.2} GB/s of blocks  ({:.2}x)", tt[5] * 1e6, bytes_w as f64 / tt[5] / 1e9, tb[5] / tt[5]);
}

//! `magsd image build`: builds (or finds cached) the guest images, showing
//! steps on a progress bar and the build's own output beneath it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mags_vm::{ImageProgress, ImageVariant, Runtime, RuntimeConfig};
use std::time::Duration;

/// Builds the images of `variants` under `data_dir` unless already there.
pub async fn build(cfg: RuntimeConfig, variants: &[ImageVariant]) -> anyhow::Result<()> {
    if std::env::var("MAGS_EXECUTOR").is_ok_and(|e| e == "fake") {
        eprintln!("MAGS_EXECUTOR=fake: no guest image is needed");
        return Ok(());
    }
    std::fs::create_dir_all(&cfg.data_dir)?;
    let runtime = Runtime::new(cfg);
    for &variant in variants {
        build_one(&runtime, variant).await?;
    }
    Ok(())
}

async fn build_one(runtime: &Runtime, variant: ImageVariant) -> anyhow::Result<()> {
    // Hidden until a step starts, so an image that is already built costs
    // one line of output.
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let result = runtime
        .ensure_variant(variant, move |p| match p {
            ImageProgress::Step { index, total, name } => {
                if b.is_hidden() {
                    b.set_draw_target(ProgressDrawTarget::stderr());
                    b.enable_steady_tick(Duration::from_millis(120));
                }
                b.set_length(total as u64);
                b.set_position(index.saturating_sub(1) as u64);
                b.set_message(name);
            }
            ImageProgress::Log(line) => b.println(format!("  {line}")),
            ImageProgress::Done { .. } => {
                let len = b.length().unwrap_or(1);
                b.set_position(len);
                b.set_message("done");
            }
        })
        .await;
    bar.finish();
    let image = result?;
    eprintln!("guest image ({variant}) ready: {}", image.dir.display());
    Ok(())
}

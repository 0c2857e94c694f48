//! A pipeline's transform in one call: the selected datasets, every model
//! planned against the declared schemas, then silver before gold.

use lake_spec::Pipeline;
use lake_table::LakeCatalog;

use crate::error::{Error, Result};
use crate::transform::{Layers, ModelReport, Observer, TransformOptions, run_layers};

/// Runs `layers` of the datasets `names` of `pipeline` (all of them when
/// empty). Every model is planned against the declared schemas before any
/// runs: a broken gold model is found before its silver table moves on.
pub async fn run_pipeline(
    catalog: &LakeCatalog,
    pipeline: &Pipeline,
    names: &[String],
    layers: Layers,
    options: &TransformOptions,
    observer: &dyn Observer,
) -> Result<Vec<ModelReport>> {
    let datasets = pipeline.select(names)?;
    let selected = Pipeline {
        source: pipeline.source.clone(),
        datasets: datasets.clone(),
    };
    let problems = crate::validate(&selected).await;
    if !problems.is_empty() {
        return Err(Error::Pipeline(problems));
    }
    run_layers(catalog, &datasets, layers, options, observer).await
}

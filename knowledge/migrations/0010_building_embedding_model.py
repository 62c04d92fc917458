from django.db import migrations, models


class Migration(migrations.Migration):
    """A rebuild may change a base's embedder (to one tuned for it, or back to the bundled one): the
    building generation's embedder, pinned at the switch-over. Every existing base keeps its own ("")."""

    dependencies = [
        ("knowledge", "0009_retrieval_sweeps"),
    ]

    operations = [
        migrations.AddField(
            model_name="knowledgebase",
            name="building_embedding_model",
            field=models.CharField(blank=True, max_length=100),
        ),
    ]

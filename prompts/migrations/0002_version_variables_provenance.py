from django.db import migrations, models


def compute_stored_variables(apps, schema_editor):
    """Versions saved before variables were stored: parse each template once, here. Parsing is
    bounded (the engine never folds huge constants); a template that no longer parses keeps []."""
    from studio.template_engine import TemplateError, template_variables

    PromptVersion = apps.get_model("prompts", "PromptVersion")
    for version in PromptVersion.objects.only("pk", "template").iterator():
        try:
            variables = template_variables(version.template)
        except TemplateError:
            variables = []
        if variables:
            PromptVersion.objects.filter(pk=version.pk).update(variables=variables)


class Migration(migrations.Migration):
    dependencies = [
        ("prompts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="labelmove",
            name="provenance",
            field=models.CharField(blank=True, max_length=500),
        ),
        migrations.AddField(
            model_name="promptversion",
            name="provenance",
            field=models.CharField(blank=True, max_length=500),
        ),
        migrations.AddField(
            model_name="promptversion",
            name="variables",
            field=models.JSONField(blank=True, default=list, editable=False),
        ),
        migrations.RunPython(compute_stored_variables, migrations.RunPython.noop),
    ]
